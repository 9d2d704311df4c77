import java.io.File;

import org.apache.avro.Schema;
import org.apache.avro.SchemaNormalization;

/**
 * Prints "FILE HEX" for each Avro schema file named: Apache Avro's own CRC-64-AVRO fingerprint of the schema's
 * Parsing Canonical Form, as the 8 little-endian bytes single-object encoding puts in its header.
 * Run with the Java producer's jars: java -cp 'examples/java-producer/target/lib/*' Fingerprints.java FILE...
 */
public final class Fingerprints {
    public static void main(String[] args) throws Exception {
        for (String path : args) {
            Schema schema = new Schema.Parser().parse(new File(path));  // a parser per file: versions share names
            long fingerprint = SchemaNormalization.parsingFingerprint64(schema);
            System.out.printf("%s %016x%n", new File(path).getName(), Long.reverseBytes(fingerprint));
        }
    }
}
