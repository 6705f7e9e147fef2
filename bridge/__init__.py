"""The bridge: from the devices' MQTT broker into the 114 reporting pipeline, durably."""

__version__ = "0.1.0"
