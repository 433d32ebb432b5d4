// Drives MariaDB Connector/J (server-side prepares) through the endpoint in $PYPROXY_*.
// Run as `java -cp mariadb-java-client.jar Client.java TABLE BYTES_FILE STREAM_FILE`: the two
// files are sent with setBytes and setBinaryStream. Prints one JSON object.
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.sql.*;
import java.util.*;

public class Client {
    public static void main(String[] args) throws Exception {
        String table = args[0];
        String url = String.format("jdbc:mariadb://%s:%s/%s?useServerPrepStmts=true&connectTimeout=10000",
                System.getenv("PYPROXY_HOST"), System.getenv("PYPROXY_PORT"), System.getenv("PYPROXY_DB"));
        Map<String, Object> out = new LinkedHashMap<>();
        try (Connection conn = DriverManager.getConnection(
                url, System.getenv("PYPROXY_USER"), System.getenv("PYPROXY_PASSWORD"))) {
            out.put("driver", conn.getMetaData().getDriverVersion());
            try (Statement st = conn.createStatement()) {
                st.execute("CREATE TABLE " + table + " (id INT AUTO_INCREMENT PRIMARY KEY,"
                        + " n INT NULL, name VARCHAR(40) NULL, data LONGBLOB NULL) CHARSET=utf8mb4");
            }

            // setInt/setString/setNull/setBytes/setBinaryStream, with generated keys. Connector/J
            // 2.7 sends every setBytes/setBinaryStream/setBlob value as COM_STMT_SEND_LONG_DATA
            // (see the test module for how that was checked).
            byte[] viaBytes = Files.readAllBytes(Path.of(args[1]));
            Path streamFile = Path.of(args[2]);
            List<Long> keys = new ArrayList<>();
            String insert = "INSERT INTO " + table + " (n, name, data) VALUES (?, ?, ?)";
            try (PreparedStatement ps = conn.prepareStatement(insert, Statement.RETURN_GENERATED_KEYS)) {
                ps.setInt(1, 1);
                ps.setString(2, "bytes 🐬");
                ps.setBytes(3, viaBytes);
                keys.add(updateAndKey(ps));
                ps.setNull(1, Types.INTEGER);
                ps.setNull(2, Types.VARCHAR);
                try (InputStream in = Files.newInputStream(streamFile)) {
                    ps.setBinaryStream(3, in, Files.size(streamFile));
                    keys.add(updateAndKey(ps));
                }
            }
            out.put("keys", keys);
            try (PreparedStatement ps = conn.prepareStatement(
                    "SELECT n, name, data FROM " + table + " WHERE id = ?")) {
                List<Object> rows = new ArrayList<>();
                for (long key : keys) {
                    ps.setLong(1, key);
                    try (ResultSet rs = ps.executeQuery()) {
                        rs.next();
                        int n = rs.getInt(1);
                        rows.add(Arrays.asList(rs.wasNull() ? null : n, rs.getString(2),
                                sha256(rs.getBytes(3))));
                    }
                }
                out.put("rows", rows);
            }

            // executeBatch: by default Connector/J 2.7 pipelines it (useBatchMultiSend: every
            // COM_STMT_EXECUTE is written before any reply is read); with useBulkStmts=true it
            // sends one MariaDB COM_STMT_BULK_EXECUTE if the server side advertises bulk support.
            out.put("batch_counts", batch(conn, table, 1000));
            try (Connection bulk = DriverManager.getConnection(url + "&useBulkStmts=true",
                    System.getenv("PYPROXY_USER"), System.getenv("PYPROXY_PASSWORD"))) {
                out.put("bulk_counts", batch(bulk, table, 2000));
            }
            // The second batch was written by another session: through a read/write split only
            // the writer is sure to have it already (read-your-writes is per session).
            out.put("batch_rows", scalar(conn,
                "SELECT /* pyproxy:writer */ COUNT(*) FROM " + table + " WHERE n >= 1000"));

            // A transaction rolled back, then one committed.
            conn.setAutoCommit(false);
            try (PreparedStatement ps = conn.prepareStatement("DELETE FROM " + table + " WHERE n >= ?")) {
                ps.setInt(1, 1000);
                out.put("deleted_in_tx", ps.executeUpdate());
            }
            conn.rollback();
            out.put("after_rollback", scalar(conn, "SELECT COUNT(*) FROM " + table));
            try (PreparedStatement ps = conn.prepareStatement("DELETE FROM " + table + " WHERE n >= ?")) {
                ps.setInt(1, 1050);
                ps.executeUpdate();
            }
            conn.commit();
            conn.setAutoCommit(true);
            out.put("after_commit", scalar(conn, "SELECT COUNT(*) FROM " + table));

            // SQLException carries the server's errno and SQLSTATE.
            try (PreparedStatement ps = conn.prepareStatement("SELECT * FROM " + table + "_missing")) {
                ps.executeQuery();
                out.put("error", null);
            } catch (SQLException e) {
                out.put("error", Arrays.asList(e.getErrorCode(), e.getSQLState()));
            }

            // 10,000 rows read with a fetch size: Connector/J streams the result (it reads
            // fetchSize rows at a time from the socket instead of buffering all of it).
            try (PreparedStatement ps = conn.prepareStatement(
                    "SELECT seq, CONCAT('row-', seq) FROM seq_1_to_10000 WHERE seq > ?")) {
                ps.setFetchSize(500);
                ps.setInt(1, 0);
                long count = 0, sum = 0;
                String last = null;
                try (ResultSet rs = ps.executeQuery()) {
                    while (rs.next()) {
                        count++;
                        sum += rs.getLong(1);
                        last = rs.getString(2);
                    }
                }
                out.put("streamed", Arrays.asList(count, sum, last));
            }
            out.put("after_stream", scalar(conn, "SELECT 1 + 1"));
        }
        System.out.println(toJson(out));
    }

    static List<Integer> batch(Connection conn, String table, int first) throws SQLException {
        List<Integer> counts = new ArrayList<>();
        try (PreparedStatement ps = conn.prepareStatement(
                "INSERT INTO " + table + " (n, name) VALUES (?, ?)")) {
            for (int i = 0; i < 100; i++) {
                ps.setInt(1, first + i);
                ps.setString(2, "batch-" + (first + i));
                ps.addBatch();
            }
            for (int c : ps.executeBatch()) counts.add(c);
        }
        return counts;
    }

    static long updateAndKey(PreparedStatement ps) throws SQLException {
        if (ps.executeUpdate() != 1) throw new SQLException("expected 1 affected row");
        try (ResultSet rs = ps.getGeneratedKeys()) {
            rs.next();
            return rs.getLong(1);
        }
    }

    static long scalar(Connection conn, String sql) throws SQLException {
        try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery(sql)) {
            rs.next();
            return rs.getLong(1);
        }
    }

    static String sha256(byte[] data) throws Exception {
        return data == null ? null : HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(data));
    }

    static String toJson(Object v) {
        if (v == null) return "null";
        if (v instanceof Number || v instanceof Boolean) return v.toString();
        if (v instanceof Map<?, ?> m) {
            StringJoiner j = new StringJoiner(",", "{", "}");
            m.forEach((k, x) -> j.add(toJson(k.toString()) + ":" + toJson(x)));
            return j.toString();
        }
        if (v instanceof List<?> l) {
            StringJoiner j = new StringJoiner(",", "[", "]");
            l.forEach(x -> j.add(toJson(x)));
            return j.toString();
        }
        StringBuilder sb = new StringBuilder("\"");
        for (char c : v.toString().toCharArray()) {
            if (c == '"' || c == '\\') sb.append('\\').append(c);
            else if (c < 0x20) sb.append(String.format("\\u%04x", (int) c));
            else sb.append(c);
        }
        return sb.append('"').toString();
    }
}
