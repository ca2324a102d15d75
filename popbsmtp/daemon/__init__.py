"""The daemon: the core loop and what runs it (signals, reaper, notify, daemonize, logging)."""
