"""The app fleet per cloud: spot VMs on a container-optimized OS running engine + sidecars."""
