-- pyproxy CRUD test on demo_db: create, read, update and delete on products and orders.
-- Run it with the mysql/mariadb CLI through pyproxy (or with `pyproxy crud --config FILE`):
--   mariadb -h 127.0.0.1 -P 6033 -u app -papp-pass demo_db < crud.sql
-- Each check prints a row `crud_check <TAB> result`; result is ok or FAILED.
-- Reads follow this session's writes (routing.consistency: read_your_writes, the default).
-- Re-runnable: it first removes what an earlier run may have left behind.

DELETE o FROM orders o JOIN products p ON p.id = o.product_id WHERE p.name LIKE 'crud-test-%';
DELETE FROM products WHERE name LIKE 'crud-test-%';

-- Create
INSERT INTO products (name, description, price, stock_quantity)
VALUES ('crud-test-widget', 'pyproxy CRUD test', 9.99, 100),
       ('crud-test-gadget', 'pyproxy CRUD test', 24.50, 10);
INSERT INTO orders (product_id, quantity, total_price, customer_name)
SELECT id, 3, price * 3, 'CRUD Tester' FROM products WHERE name = 'crud-test-widget';

-- Read
SELECT 'create products' AS crud_check, IF(COUNT(*) = 2, 'ok', 'FAILED') AS result
FROM products WHERE name LIKE 'crud-test-%';
SELECT 'create order' AS crud_check,
       IF(COUNT(*) = 1 AND MAX(o.total_price) = 29.97 AND MAX(o.status) = 'pending',
          'ok', 'FAILED') AS result
FROM orders o JOIN products p ON p.id = o.product_id WHERE p.name = 'crud-test-widget';
SELECT 'read order with product' AS crud_check,
       IF(COUNT(*) = 1 AND MAX(CONCAT(p.name, ' x', o.quantity)) = 'crud-test-widget x3',
          'ok', 'FAILED') AS result
FROM orders o JOIN products p ON p.id = o.product_id WHERE o.customer_name = 'CRUD Tester'
  AND p.name LIKE 'crud-test-%';

-- Update
UPDATE products SET price = 11.00, stock_quantity = stock_quantity - 3
WHERE name = 'crud-test-widget';
UPDATE orders o JOIN products p ON p.id = o.product_id SET o.status = 'completed'
WHERE p.name = 'crud-test-widget';
SELECT 'update product' AS crud_check,
       IF(COUNT(*) = 1 AND MAX(price) = 11.00 AND MAX(stock_quantity) = 97,
          'ok', 'FAILED') AS result
FROM products WHERE name = 'crud-test-widget';
SELECT 'update order' AS crud_check,
       IF(COUNT(*) = 1 AND MAX(o.status) = 'completed', 'ok', 'FAILED') AS result
FROM orders o JOIN products p ON p.id = o.product_id WHERE p.name = 'crud-test-widget';

-- Delete
DELETE o FROM orders o JOIN products p ON p.id = o.product_id WHERE p.name LIKE 'crud-test-%';
DELETE FROM products WHERE name LIKE 'crud-test-%';
SELECT 'delete order' AS crud_check, IF(COUNT(*) = 0, 'ok', 'FAILED') AS result
FROM orders WHERE customer_name = 'CRUD Tester';
SELECT 'delete products' AS crud_check, IF(COUNT(*) = 0, 'ok', 'FAILED') AS result
FROM products WHERE name LIKE 'crud-test-%';
