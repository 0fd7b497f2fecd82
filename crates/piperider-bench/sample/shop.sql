-- The sample data source `cargo xtask dev` and `cargo xtask bench` profile:
-- two tables, 3 and 5 columns, 10 and 20 rows.
CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT);
CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, total NUMERIC(10,2) NOT NULL, status TEXT NOT NULL, created_at DATE NOT NULL);
INSERT INTO customers VALUES
  (1, 'Ada', 'ada@example.com'), (2, 'Grace', 'grace@example.com'), (3, 'Edsger', NULL),
  (4, 'Barbara', 'barbara@example.com'), (5, 'Donald', 'donald@example.com'), (6, 'Frances', NULL),
  (7, 'John', 'john@example.com'), (8, 'Margaret', 'margaret@example.com'), (9, 'Ken', 'ken@example.com'),
  (10, 'Radia', 'radia@example.com');
INSERT INTO orders VALUES
  (1, 1, 10.50, 'paid', '2026-01-01'), (2, 2, 20.50, 'shipped', '2026-01-02'), (3, 3, 30.50, 'new', '2026-01-03'),
  (4, 4, 40.50, 'paid', '2026-01-04'), (5, 5, 50.50, 'shipped', '2026-01-05'), (6, 6, 60.50, 'new', '2026-01-06'),
  (7, 7, 70.50, 'paid', '2026-01-07'), (8, 8, 80.50, 'shipped', '2026-01-08'), (9, 9, 90.50, 'new', '2026-01-09'),
  (10, 10, 100.50, 'paid', '2026-01-10'), (11, 1, 110.50, 'shipped', '2026-01-11'), (12, 2, 120.50, 'new', '2026-01-12'),
  (13, 3, 130.50, 'paid', '2026-01-13'), (14, 4, 140.50, 'shipped', '2026-01-14'), (15, 5, 150.50, 'new', '2026-01-15'),
  (16, 6, 160.50, 'paid', '2026-01-16'), (17, 7, 170.50, 'shipped', '2026-01-17'), (18, 8, 180.50, 'new', '2026-01-18'),
  (19, 9, 190.50, 'paid', '2026-01-19'), (20, 10, 200.50, 'shipped', '2026-01-20');
