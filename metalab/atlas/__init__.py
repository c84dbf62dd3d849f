"""Atlas, the dashboard: a web app that reads the PostgreSQL index (and files under file_root)."""
