"""Who is calling: API keys, roles, and the identity each RPC acts as."""
