-- Long-lived sales tables, filled month by month. numeric keeps sums exact to the cent.
CREATE TABLE IF NOT EXISTS sales (
    sale_month date    NOT NULL,
    idx        integer NOT NULL,
    value      numeric NOT NULL,
    date       date    NOT NULL,
    store_idx  integer NOT NULL,
    PRIMARY KEY (sale_month, idx)
);

CREATE TABLE IF NOT EXISTS monthly_sales (
    store_idx  integer NOT NULL,
    location   text    NOT NULL,
    sale_month date    NOT NULL,
    value      numeric NOT NULL,
    PRIMARY KEY (sale_month, store_idx)
);
