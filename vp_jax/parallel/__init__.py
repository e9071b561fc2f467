"""Device mesh, logical axis rules and sharding helpers shared by every model kind."""
