// Drives mysql2 through the endpoint in $PYPROXY_*; prints one JSON object, or exits non-zero.
'use strict';
const crypto = require('crypto');
const mysql = require('mysql2/promise');

const sha256 = (buf) => crypto.createHash('sha256').update(buf).digest('hex');

async function main() {
  const table = process.argv[2];
  const conn = await mysql.createConnection({
    host: process.env.PYPROXY_HOST,
    port: Number(process.env.PYPROXY_PORT),
    user: process.env.PYPROXY_USER,
    password: process.env.PYPROXY_PASSWORD,
    database: process.env.PYPROXY_DB,
    charset: 'utf8mb4',
    connectTimeout: 10000,
  });
  const out = {};
  try {
    await conn.query(`CREATE TABLE ${table} (id INT AUTO_INCREMENT PRIMARY KEY,
      name VARCHAR(40), n INT, data LONGBLOB) CHARSET=utf8mb4`);

    // query(): text protocol, client-side escaping; a multi-row insert with VALUES ?
    const [multi] = await conn.query(`INSERT INTO ${table} (name, n) VALUES ?`,
      [[['a', 1], ['b', 2], ['c 🐬', 3]]]);
    out.multi_insert = { affected: multi.affectedRows, first_id: multi.insertId };
    const [texts] = await conn.query(`SELECT id, name, n FROM ${table} ORDER BY id`);
    out.query_rows = texts.map((r) => [r.id, r.name, r.n]);

    // execute(): server-side prepared statements (COM_STMT_PREPARE/EXECUTE), re-used.
    const blob = crypto.randomBytes(256 * 1024);
    const [ins] = await conn.execute(`INSERT INTO ${table} (name, n, data) VALUES (?, ?, ?)`,
      ['blob', null, blob]);
    out.execute_insert = { affected: ins.affectedRows, id: ins.insertId };
    const [exec] = await conn.execute(`SELECT name, n FROM ${table} WHERE n >= ? ORDER BY n`, [2]);
    out.execute_rows = exec.map((r) => [r.name, r.n]);
    const [[back]] = await conn.execute(`SELECT data, LENGTH(data) AS len FROM ${table}
      WHERE id = ?`, [ins.insertId]);
    out.blob = { sent: sha256(blob), received: sha256(back.data), length: back.len };

    // Errors carry errno, code and SQLSTATE, from both protocols.
    out.errors = [];
    for (const run of [(sql) => conn.query(sql), (sql) => conn.execute(sql)]) {
      try {
        await run(`SELECT * FROM ${table}_missing`);
        out.errors.push(null);
      } catch (err) {
        out.errors.push({ errno: err.errno, code: err.code, sqlState: err.sqlState });
      }
    }

    // Transactions.
    await conn.beginTransaction();
    await conn.execute(`INSERT INTO ${table} (name) VALUES (?)`, ['rolled back']);
    await conn.rollback();
    await conn.beginTransaction();
    await conn.execute(`INSERT INTO ${table} (name) VALUES (?)`, ['committed']);
    await conn.commit();
    const [names] = await conn.query(`SELECT name FROM ${table}
      WHERE name IN ('rolled back', 'committed')`);
    out.tx_names = names.map((r) => r.name);

    // 10,000-row results through both protocols.
    const [bigText] = await conn.query('SELECT seq FROM seq_1_to_10000');
    const [bigBin] = await conn.execute('SELECT seq, CONCAT(\'row-\', seq) AS s ' +
      'FROM seq_1_to_10000 WHERE seq > ?', [0]);
    out.big = {
      query: { count: bigText.length, sum: bigText.reduce((a, r) => a + Number(r.seq), 0) },
      execute: { count: bigBin.length, last: bigBin[bigBin.length - 1].s },
    };
  } finally {
    await conn.end();
  }
  console.log(JSON.stringify(out));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
