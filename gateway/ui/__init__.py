"""The operator's dashboard at /admin/ui: server-rendered pages over the admin operations
(gateway/operations.py), a signed session cookie behind the admin token, and a little
JavaScript of the project's own for the live charts (static/)."""
