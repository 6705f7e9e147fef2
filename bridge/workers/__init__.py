"""The bridge's threads: the store writer (group commit), the delivery workers, the supervision ticker."""
