"""Where a plugin lives: in this process (native) or in a worker process (isolated)."""
