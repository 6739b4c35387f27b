import { csvSafe, fromCsvSafe } from './transfer.records.js';

describe('CSV cells and formula injection', () => {
  it.each(['=HYPERLINK("https://evil.example","x")', '+1', '-negative', '@SUM(A1)', '\tindent', '\rreturn', "'quoted", "'=already"])(
    'neutralises %j with a leading quote, and reads it back exactly',
    (value) => {
      expect(csvSafe(value)).toBe(`'${value}`);
      expect(fromCsvSafe(csvSafe(value))).toBe(value);
    },
  );

  it.each(['plain', 'a=b', 'x-1', '', "it's", '1e5'])('leaves %j as it is, both ways', (value) => {
    expect(csvSafe(value)).toBe(value);
    expect(fromCsvSafe(value)).toBe(value);
  });

  it("reads a quote that is not before a formula character as part of the value (a hand-written 'abc)", () => {
    expect(fromCsvSafe("'abc")).toBe("'abc");
    expect(fromCsvSafe("'")).toBe("'");
  });
});
