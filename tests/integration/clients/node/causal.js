// Causal reads across connections with mysql2 (query, or execute = server-side prepares):
// connection A writes (INSERT, UPDATE, DELETE, CREATE TABLE, a transaction), connection B
// reads it at once. Prints {"iterations": n, "stale": n}.
'use strict';
const mysql = require('mysql2/promise');

async function connect() {
  return mysql.createConnection({
    host: process.env.PYPROXY_HOST, port: Number(process.env.PYPROXY_PORT),
    user: process.env.PYPROXY_USER, password: process.env.PYPROXY_PASSWORD,
    database: process.env.PYPROXY_DB, connectTimeout: 10000,
  });
}

async function main() {
  const [table, iterations, mode] = [process.argv[2], Number(process.argv[3]), process.argv[4]];
  const a = await connect();
  const b = await connect();
  const run = (conn) => (mode === 'execute' ? conn.execute.bind(conn) : conn.query.bind(conn));
  const [write, read] = [run(a), run(b)];
  // B's read: its rows as arrays, or null when it failed (e.g. a table not there yet).
  const rows = async (sql, args) => {
    try { const [r] = await read({ sql, rowsAsArray: true }, args); return JSON.stringify(r); }
    catch (e) { return null; }
  };
  await a.query(`CREATE TABLE ${table} (id INT PRIMARY KEY, v INT NOT NULL)`);
  const sel = `SELECT v FROM ${table} WHERE id = ?`;
  let stale = 0;
  for (let i = 0; i < iterations; i++) {
    await write(`INSERT INTO ${table} (id, v) VALUES (?, 0)`, [i]);
    if (await rows(sel, [i]) !== '[[0]]') stale++;
    await write(`UPDATE ${table} SET v = ? WHERE id = ?`, [i + 1, i]);
    if (await rows(sel, [i]) !== `[[${i + 1}]]`) stale++;
    if (i % 2) {
      await write(`DELETE FROM ${table} WHERE id = ?`, [i]);
      if (await rows(sel, [i]) !== '[]') stale++;
    }
    if (i % 10 === 0) {
      await a.beginTransaction();
      await write(`INSERT INTO ${table} (id, v) VALUES (?, 7)`, [-i - 1]);
      await write(`UPDATE ${table} SET v = 8 WHERE id = ?`, [-i - 1]);
      await a.commit();
      if (await rows(sel, [-i - 1]) !== '[[8]]') stale++;
    }
    if (i % 50 === 0) {
      await a.query(`CREATE TABLE ${table}_${i} (id INT)`);
      if (await rows(`SELECT COUNT(*) FROM ${table}_${i}`, []) !== '[[0]]') stale++;
      await a.query(`DROP TABLE ${table}_${i}`);
    }
  }
  await a.query(`DROP TABLE ${table}`);
  await a.end();
  await b.end();
  console.log(JSON.stringify({ iterations, stale }));
}
main().catch((e) => { console.error(e); process.exit(1); });
