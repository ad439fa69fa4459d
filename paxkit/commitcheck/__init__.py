"""A model checker of commit protocols: the explorer, and 2PC, 3PC and Paxos Commit in it.

The command line is `python -m paxkit.commit_model`."""
