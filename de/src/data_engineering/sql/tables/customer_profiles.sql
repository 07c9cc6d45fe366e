-- customer_profiles.csv, column for column. attr_c stays 'yes'/'no' text: the table holds
-- the file's values, not a reinterpretation of them.
CREATE TABLE {table} (
    idx    integer PRIMARY KEY,
    attr_a integer,
    attr_b text,
    attr_c text
);
