"""Neural-network building blocks shared by the model kinds."""
