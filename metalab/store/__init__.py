"""Where run records go: FileStore on disk, PostgresStore as the index over it."""
