"""The SQLite engine of the store."""
