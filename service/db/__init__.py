"""Storage: the engine, the connections, the stores of jobs and attempts, the tables, the migrations runner and the
embedded server."""
