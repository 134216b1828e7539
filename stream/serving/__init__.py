"""Serving: the scorer's loop, per-record handling, event-time intake, checkpoints and
recovery, and the wiring that builds it all from the settings."""
