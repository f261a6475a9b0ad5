"""The Spark engine (issue 17, in progress): the DuckDB SQL of the builders, translated."""
