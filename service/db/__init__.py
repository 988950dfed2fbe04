"""Storage: the engine, the tables, the migrations runner, the embedded server and the repository of queries."""
