-- Dead letters: messages this component's consumer can never handle (undecodable or
-- invalid), kept with the reason until an operator replays them. Transient failures never
-- land here: they are retried for as long as it takes. A replayed message keeps its id,
-- so one that dies again takes its old row back.
CREATE TABLE dead_letters (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    queue       text NOT NULL,
    message_id  text,
    routing_key text NOT NULL,
    body        bytea NOT NULL,
    headers     jsonb NOT NULL DEFAULT '{}',
    reason      text NOT NULL,
    attempts    integer NOT NULL,
    dead_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (queue, message_id)
);
CREATE INDEX dead_letters_by_time ON dead_letters (dead_at);
