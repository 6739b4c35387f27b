export interface EmbeddedPostgresHandle {
    /** A connection URL for the `postgres` database of the started server. */
    readonly url: string;
    readonly port: number;
    stop(): Promise<void>;
    /** Starts a stopped server again, on the same port (not for an `ephemeral` one: its folder is deleted on stop). */
    start(): Promise<void>;
}
export interface EmbeddedPostgresOptions {
    /** Where the cluster lives. An existing cluster is reused, a missing one is created. */
    dataDir: string;
    /** Faster and unsafe settings (no fsync) for throw-away test clusters. Default: `false`. */
    ephemeral?: boolean;
    /** More server settings, each passed as `-c name=value` (e.g. `{ wal_level: 'logical' }`). Default: none. */
    settings?: Record<string, string>;
    /** Receives the server's log lines. Default: dropped. */
    onLog?: (line: string) => void;
}
/** Asks the OS for a free TCP port on the loopback interface (never 5432). */
export declare function findFreePort(): Promise<number>;
export declare function startEmbeddedPostgres(options: EmbeddedPostgresOptions): Promise<EmbeddedPostgresHandle>;
