"""`make chaos`: a Jepsen-style run of the whole stack under load and real faults."""
