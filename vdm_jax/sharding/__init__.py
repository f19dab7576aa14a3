"""Device mesh and logical-axis sharding."""
