"""gRPC plumbing shared by both services: status mapping, server assembly, channels."""
