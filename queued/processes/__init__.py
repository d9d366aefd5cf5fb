"""The process side: the supervisor and what runs, watches and guards job processes."""
