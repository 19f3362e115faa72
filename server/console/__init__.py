"""The web console: its assets, and a gRPC-Web bridge to the server's own gRPC API."""
