"""The `swarm-manager` process: its entry point (`launch`, which settles the memory
allocator in `memalloc` first), its command line (`main`) and the wiring that builds
and runs every part of the manager (`server`)."""
