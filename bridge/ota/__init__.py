"""Over-the-air firmware updates: signed release bundles and the bridge's decision to trust one."""
