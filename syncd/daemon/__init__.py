"""The long-running daemon: watcher, poller, control socket and the supervisor around the engine."""
