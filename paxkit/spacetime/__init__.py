"""Space-time diagrams: lanes per process, arrows per message, a mark per step, drawn as SVG.

The scenarios (infra/scenarios) record what they provoke on them; the gateway's dashboard
draws a transaction's timeline from the coordinator's log with the same drawing."""
