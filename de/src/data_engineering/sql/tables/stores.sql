CREATE TABLE {table} (
    idx      integer PRIMARY KEY,
    location text NOT NULL
);
