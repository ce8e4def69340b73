// A small HTTP app for deploy tests: exits at once on SIGTERM, with no graceful shutdown.
//
//   java -jar app.jar PORT [RELEASE]        (or -Drelease=R)
//
// /infra/health -> "UP", /infra/port -> its port, /slow?ms=N -> answers after N ms,
// / -> its release, POST anything -> the body echoed back.

import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.Executors;
import sun.misc.Signal;

public final class SlowApp {
    public static void main(String[] args) throws IOException {
        final int port = Integer.parseInt(args[0]);
        final String release = args.length > 1 ? args[1] : System.getProperty("release", "dev");
        // halt(0) skips shutdown hooks: the process stops serving the moment SIGTERM lands.
        Signal.handle(new Signal("TERM"), sig -> Runtime.getRuntime().halt(0));
        HttpServer server = HttpServer.create(new InetSocketAddress("127.0.0.1", port), 128);
        server.setExecutor(Executors.newFixedThreadPool(64));
        server.createContext("/infra/health", ex -> reply(ex, 200, "UP"));
        server.createContext("/infra/port", ex -> reply(ex, 200, Integer.toString(port)));
        server.createContext("/slow", ex -> {
            long ms = 100;
            String query = ex.getRequestURI().getQuery();
            if (query != null && query.startsWith("ms=")) {
                ms = Long.parseLong(query.substring(3));
            }
            try {
                Thread.sleep(ms);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            reply(ex, 200, "slept " + ms + "ms on " + release);
        });
        server.createContext("/", ex -> {
            if ("POST".equals(ex.getRequestMethod())) {
                byte[] body;
                try (InputStream in = ex.getRequestBody()) {
                    body = in.readAllBytes();
                }
                reply(ex, 200, body);
            } else {
                reply(ex, 200, release);
            }
        });
        server.start();
        System.out.println("SlowApp release=" + release + " listening on port " + port);
    }

    private static void reply(HttpExchange ex, int status, String text) throws IOException {
        reply(ex, status, text.getBytes(StandardCharsets.UTF_8));
    }

    private static void reply(HttpExchange ex, int status, byte[] body) throws IOException {
        ex.getResponseHeaders().set("Content-Type", "text/plain");
        ex.sendResponseHeaders(status, body.length == 0 ? -1 : body.length);
        try (OutputStream out = ex.getResponseBody()) {
            out.write(body);
        }
    }
}
