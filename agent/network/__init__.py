"""The node's network data plane, owned by the agent: per overlay network a bridge and a
VXLAN device with static forwarding and neighbour entries for the remote attachments
(`dataplane`), kept in step with what the manager sends."""
