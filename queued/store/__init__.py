"""The store: what the daemon keeps, behind one interface."""
