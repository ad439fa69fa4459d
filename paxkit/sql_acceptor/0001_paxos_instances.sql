-- One Paxos acceptor (paxkit/acceptors.py): a row per instance (a global transaction).
-- promised_* and accepted_* are paxkit.paxos.AcceptorState.to_record(); members are the
-- instance's branch names, written at registration, so a coordinator taking it over needs
-- no coordinator log; decided is the value someone learned (the sweep skips those rows).
CREATE TABLE paxos_instances (
    instance       text PRIMARY KEY,
    members        jsonb NOT NULL DEFAULT '[]',
    promised_round integer NOT NULL DEFAULT 0,
    promised_by    text NOT NULL DEFAULT '',
    accepted_round integer,
    accepted_by    text,
    accepted_value text,
    decided        text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CHECK ((accepted_round IS NULL) = (accepted_value IS NULL)),
    CHECK ((accepted_by IS NULL) = (accepted_value IS NULL))
);
CREATE INDEX paxos_instances_undecided ON paxos_instances (created_at) WHERE decided IS NULL;
CREATE INDEX paxos_instances_updated_at ON paxos_instances USING brin (updated_at);
