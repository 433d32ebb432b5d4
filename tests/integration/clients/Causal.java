// Causal reads across connections over JDBC (MariaDB Connector/J: its default client-side
// prepares, or server-side ones with a third argument "server", useServerPrepStmts=true):
// connection A writes (INSERT, UPDATE, DELETE, CREATE TABLE, a transaction), connection B
// reads it at once. Prints {"iterations": n, "stale": n}.
import java.sql.*;

public class Causal {
    static Connection a, b;

    static void write(String sql, int... args) throws SQLException {
        try (PreparedStatement st = a.prepareStatement(sql)) {
            for (int k = 0; k < args.length; k++) st.setInt(k + 1, args[k]);
            st.execute();
        }
    }

    // B's rows as "v,v;v,v", or null when the read failed (e.g. no such table yet).
    static String rows(String sql, int... args) {
        try (PreparedStatement st = b.prepareStatement(sql)) {
            for (int k = 0; k < args.length; k++) st.setInt(k + 1, args[k]);
            StringBuilder out = new StringBuilder();
            try (ResultSet rs = st.executeQuery()) {
                int n = rs.getMetaData().getColumnCount();
                while (rs.next()) {
                    if (out.length() > 0) out.append(';');
                    for (int c = 1; c <= n; c++) out.append(c > 1 ? "," : "").append(rs.getLong(c));
                }
            }
            return out.toString();
        } catch (SQLException e) {
            return null;
        }
    }

    static int stale = 0;

    static void expect(String got, String want) { if (got == null || !got.equals(want)) stale++; }

    public static void main(String[] args) throws Exception {
        String table = args[0];
        int iterations = Integer.parseInt(args[1]);
        boolean server = args.length > 2 && args[2].equals("server");
        String url = String.format("jdbc:mariadb://%s:%s/%s?useServerPrepStmts=%b",
            System.getenv("PYPROXY_HOST"), System.getenv("PYPROXY_PORT"),
            System.getenv("PYPROXY_DB"), server);
        String user = System.getenv("PYPROXY_USER"), password = System.getenv("PYPROXY_PASSWORD");
        a = DriverManager.getConnection(url, user, password);
        b = DriverManager.getConnection(url, user, password);
        write("CREATE TABLE " + table + " (id INT PRIMARY KEY, v INT NOT NULL)");
        String sel = "SELECT v FROM " + table + " WHERE id = ?";
        for (int i = 0; i < iterations; i++) {
            write("INSERT INTO " + table + " (id, v) VALUES (?, 0)", i);
            expect(rows(sel, i), "0");
            write("UPDATE " + table + " SET v = ? WHERE id = ?", i + 1, i);
            expect(rows(sel, i), String.valueOf(i + 1));
            if (i % 2 == 1) {
                write("DELETE FROM " + table + " WHERE id = ?", i);
                expect(rows(sel, i), "");
            }
            if (i % 10 == 0) {
                a.setAutoCommit(false);
                write("INSERT INTO " + table + " (id, v) VALUES (?, 7)", -i - 1);
                write("UPDATE " + table + " SET v = 8 WHERE id = ?", -i - 1);
                a.commit();
                a.setAutoCommit(true);
                expect(rows(sel, -i - 1), "8");
            }
            if (i % 50 == 0) {
                write("CREATE TABLE " + table + "_" + i + " (id INT)");
                expect(rows("SELECT COUNT(*) FROM " + table + "_" + i), "0");
                write("DROP TABLE " + table + "_" + i);
            }
        }
        write("DROP TABLE " + table);
        a.close();
        b.close();
        System.out.println("{\"iterations\": " + iterations + ", \"stale\": " + stale + "}");
    }
}
