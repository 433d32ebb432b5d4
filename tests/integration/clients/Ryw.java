// Read-your-writes loop over JDBC (MariaDB Connector/J, server-side prepared statements):
// INSERT/SELECT, UPDATE/SELECT, CREATE TABLE/SELECT. Prints {"stale": n, ...}.
import java.sql.*;

public class Ryw {
    public static void main(String[] args) throws Exception {
        String table = args[0];
        int iterations = Integer.parseInt(args[1]);
        String url = String.format("jdbc:mariadb://%s:%s/%s?useServerPrepStmts=true",
            System.getenv("PYPROXY_HOST"), System.getenv("PYPROXY_PORT"), System.getenv("PYPROXY_DB"));
        int stale = 0;
        try (Connection c = DriverManager.getConnection(url, System.getenv("PYPROXY_USER"),
                System.getenv("PYPROXY_PASSWORD"))) {
            try (Statement st = c.createStatement()) {
                st.execute("CREATE TABLE " + table + " (id INT PRIMARY KEY, v INT NOT NULL)");
            }
            PreparedStatement ins = c.prepareStatement("INSERT INTO " + table + " (id, v) VALUES (?, 0)");
            PreparedStatement upd = c.prepareStatement("UPDATE " + table + " SET v = ? WHERE id = ?");
            PreparedStatement sel = c.prepareStatement("SELECT v FROM " + table + " WHERE id = ?");
            for (int i = 0; i < iterations; i++) {
                ins.setInt(1, i);
                ins.executeUpdate();
                sel.setInt(1, i);
                try (ResultSet rs = sel.executeQuery()) { if (!rs.next()) stale++; }
                upd.setInt(1, i + 1);
                upd.setInt(2, i);
                upd.executeUpdate();
                try (ResultSet rs = sel.executeQuery()) { if (!rs.next() || rs.getInt(1) != i + 1) stale++; }
                if (i % 50 == 0) {
                    try (Statement st = c.createStatement()) {
                        st.execute("CREATE TABLE " + table + "_" + i + " (id INT)");
                        try { st.executeQuery("SELECT COUNT(*) FROM " + table + "_" + i).close(); }
                        catch (SQLException e) { stale++; }
                        st.execute("DROP TABLE " + table + "_" + i);
                    }
                }
            }
        }
        System.out.println("{\"iterations\": " + iterations + ", \"stale\": " + stale + "}");
    }
}
