"""Schedules, triggers and the ``ppo-dr`` entry point: the outermost layer."""
