"""The one harness: the local system as real processes, for `make run`, the tests, the HIL suite and
the benchmarks, so that each of them starts, waits for and stops the system the same way.

procs.py     Process (output logged, ready line awaited, stopped by its own handle), wait_until,
             stop_process, Arrivals (waiting on what another thread receives)
ports.py     free loopback ports, waiting for a listener
mosquitto.py the broker (passwords, the production ACL of provisioning/acl.py, optional TLS)
intake.py    the 114 reference intake, and a client of its API
bridge.py    the bridge: its config, registry, start/stop/kill, its CLI
vboard.py    virtual boards (the baochay-vboard launcher) with their serial console
console.py   the serial console client (also the installer's, through provisioning/console.py)
observer.py  an MQTT client recording what crosses the broker
devices.py, tls.py   device configs and throwaway certificates for local runs
run.py       baochay-stack (`make run`)
"""
