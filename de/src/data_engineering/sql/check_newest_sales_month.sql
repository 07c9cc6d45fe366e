SELECT max(sale_month) FROM {table};
