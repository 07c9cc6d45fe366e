CREATE TABLE {table} (
    idx   integer PRIMARY KEY,
    label smallint NOT NULL CONSTRAINT label_is_0_or_1 CHECK (label IN (0, 1))
);
