// Read-your-writes loop with mysql2 (query, and execute = server-side prepared statements):
// INSERT then SELECT, UPDATE then SELECT, CREATE TABLE then SELECT. Prints {"stale": n, ...}.
'use strict';
const mysql = require('mysql2/promise');

async function main() {
  const [table, iterations, mode] = [process.argv[2], Number(process.argv[3]), process.argv[4]];
  const conn = await mysql.createConnection({
    host: process.env.PYPROXY_HOST, port: Number(process.env.PYPROXY_PORT),
    user: process.env.PYPROXY_USER, password: process.env.PYPROXY_PASSWORD,
    database: process.env.PYPROXY_DB, connectTimeout: 10000,
  });
  const run = mode === 'execute' ? conn.execute.bind(conn) : conn.query.bind(conn);
  await conn.query(`CREATE TABLE ${table} (id INT PRIMARY KEY, v INT NOT NULL)`);
  let stale = 0;
  for (let i = 0; i < iterations; i++) {
    await run(`INSERT INTO ${table} (id, v) VALUES (?, ?)`, [i, 0]);
    let [rows] = await run(`SELECT v FROM ${table} WHERE id = ?`, [i]);
    if (rows.length !== 1) stale++;
    await run(`UPDATE ${table} SET v = ? WHERE id = ?`, [i + 1, i]);
    [rows] = await run(`SELECT v FROM ${table} WHERE id = ?`, [i]);
    if (rows.length !== 1 || rows[0].v !== i + 1) stale++;
    if (i % 50 === 0) {
      await conn.query(`CREATE TABLE ${table}_${i} (id INT)`);
      try { await conn.query(`SELECT COUNT(*) FROM ${table}_${i}`); } catch (e) { stale++; }
      await conn.query(`DROP TABLE ${table}_${i}`);
    }
  }
  await conn.end();
  console.log(JSON.stringify({ iterations, stale }));
}
main().catch((e) => { console.error(e); process.exit(1); });
