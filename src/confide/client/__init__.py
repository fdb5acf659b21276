"""Python clients for confide's services."""
