"""Address allocation (leader only, as SwarmKit's allocator): subnets for networks from
the cluster's address pools, VXLAN ids, and addresses inside each network's subnet for
virtual IPs, tasks and nodes.

`ipam` holds the pure bookkeeping (what is free, who owns what); it remembers nothing
across restarts: the allocator rebuilds it from the stored objects, which carry their
own addresses, so a leader killed in the middle of allocating leaves no address with two
owners.
"""
