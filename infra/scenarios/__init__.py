"""Scenarios you can watch: the classic results of distributed commit and of session
consistency, each played on a live paxmart stack, drawn as a space-time diagram and
judged by a verdict the scenario asserts (`make scenario NAME=...`, `make scenarios`)."""
