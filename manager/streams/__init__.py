"""Streams the manager serves to clients as things happen: cluster events (`events`,
for `swarmctl events`) and service logs gathered from the agents (`logbroker`)."""
