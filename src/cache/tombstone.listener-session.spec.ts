import { describeTarget, sessionNotKept } from './tombstone.listener-session.js';

describe('describeTarget', () => {
  it('names host, port and database of a connection string, never its user or password', () => {
    expect(describeTarget({ connectionString: 'postgres://app:s3cret@db.internal:6432/shop?sslmode=require' })).toBe('db.internal:6432/shop');
    expect(describeTarget({ connectionString: 'postgresql://app:s3cret@pooler/my%20db' })).toBe('pooler:5432/my db');
  });

  it('names those of a client config, with the defaults pg uses', () => {
    expect(describeTarget({ host: '10.0.0.7', port: 6432, database: 'app', user: 'app', password: 's3cret' })).toBe('10.0.0.7:6432/app');
    expect(describeTarget({})).toBe('localhost:5432/(default database)');
  });

  it('says so, without repeating it, when a connection string is not a URL', () => {
    expect(describeTarget({ connectionString: 'host=db password=s3cret' })).toBe('a connection string that cannot be read as a URL');
  });
});

describe('sessionNotKept', () => {
  it('says where, why, and what to change', () => {
    const error = sessionNotKept('db:6432/app', 'PostgreSQL backend 7, which ran its LISTEN, served another connection meanwhile');
    expect(error.name).toBe('TombstoneConfigurationError');
    expect(error.message).toMatch(/^TombstoneModule: the lookup cache's listening connection \(db:6432\/app\) goes through a connection pooler .*: PostgreSQL backend 7, which ran its LISTEN, served another connection meanwhile\. /);
    expect(error.message).toContain('\n\nPotential solutions:\n- Point `cache.listen` at PostgreSQL itself');
  });
});
