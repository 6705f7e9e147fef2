"""The HIL harness: a device under test over its serial console, the rig around it, the system behind
it (broker, bridge, 114 intake) and the results a run leaves behind."""
