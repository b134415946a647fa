"""Managers as a group: each manager's etcd lease (`lease`), its membership as a node
of the cluster (`membership`), and the election of the one leader that runs the
reconcilers (`election`)."""
