"""The cluster's certificate authority on the manager side: creating the root CA and join
tokens (`bootstrap`), the NodeCA gRPC service that issues and renews node certificates
(`service`), the manager's own TLS credentials (`credentials`), and who a caller is
(`authz`)."""
