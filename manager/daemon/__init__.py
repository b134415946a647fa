"""The `swarm-manager` process: its entry point (`launch`, which settles the memory
allocator in `memalloc` first), its command line (`main`, filling `config`), and the
wiring that builds and runs every part of the manager (`server`, calling the stages of
`stages` in order; the gRPC servers are in `listeners`, their ports' rule in `ports`)."""
